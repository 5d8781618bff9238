"""
C{orchestrator-ctl}, the command-line client of the admin API. It imports only the
admin client (L{orchestrator.admin.client}), never the server: an import-linter
contract in setup.cfg says so.
"""
