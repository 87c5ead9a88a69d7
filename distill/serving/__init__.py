"""Serving: the bundle (what publish writes and the server reads), FAISS indexes, the recommender
that answers requests, and placing new items in a published bundle."""
