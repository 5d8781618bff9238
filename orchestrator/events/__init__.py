"""
Structured events: the bus (bus) and where events go besides the log: a JSON-lines
file (jsonlines), webhooks (webhook) and Slack (slack), built from the configuration
(consumers).
"""
