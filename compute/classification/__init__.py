"""Classification of ionised nebulae: the line-ratio diagnostic and the neural network."""
