"""Compression techniques: each a plain function over an ``nn.Module`` returning the new
module and a record of what it did."""
