"""nevergrad-zonp: zeroth-order training of black-box neural networks for Nevergrad."""
