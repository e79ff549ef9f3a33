"""The I/O shell: listeners, sessions and upstream connections around the sans-io core.

Data flow of one session: accept -> caps check -> our own greeting -> client bytes into
``pop3.commands.CommandParser`` -> the session decides (local answer, login, or relay) ->
upstream bytes into ``pop3.framing.ResponseFramer`` -> relayed to the client.
"""
