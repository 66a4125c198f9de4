"""hardneg stage 2: CE-CLIP training and evaluation on negative shards."""
