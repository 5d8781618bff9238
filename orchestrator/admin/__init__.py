"""
The admin listener (the operator's API, its event stream, the dashboard) and its client.

Importing this package imports nothing else: C{orchestrator-ctl} imports
L{orchestrator.admin.client} alone, never the server's modules.
"""
