"""Bundled YAML recipes, installed as ``snnkit.configs`` so ``snnkit train NAME`` finds them."""
