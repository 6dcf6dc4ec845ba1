"""`python -m resnet_batch`: the resnet-batch command."""

from .run.cli import run

if __name__ == "__main__":
    run()
