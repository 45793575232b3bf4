"""The one weight loader: format readers yield (name, tensor); models map names to parameters."""
