"""Teachers: a pretrained language model (encoder or causal LM) plus a recommendation head."""
