"""`python -m resnet_batch`: the resnet-batch command."""

from .cli.main import run

if __name__ == "__main__":
    run()
