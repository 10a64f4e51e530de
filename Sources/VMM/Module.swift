// VMM layer.
