"""
orchestrator: a Twisted front door for AI-agent containers running as Docker Swarm services.

On-demand agents sleep at 0 replicas and are woken by their first request; always-on
agents are left to Swarm and only watched. See README.md.
"""
