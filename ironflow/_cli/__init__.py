"""The ``ironflow`` command and the ``Client`` it is thin over."""
