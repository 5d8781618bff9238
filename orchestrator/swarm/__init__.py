"""
Docker Swarm: what it tells us as values (values), the only module that imports the
Docker SDK (docker), its verified in-memory fake (memory), and the event watcher (watcher).
"""
