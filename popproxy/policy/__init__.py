"""Policy: YAML -> validated, frozen objects.  No asyncio, no sockets."""
