"""The recommendation API: top-k and scores for raw user and item ids."""
