"""
The reliability suite: hostile inputs, slow and idle clients under the stack's memory
limit, signals, and the real Swarm failing underneath. C{bench/reliability} runs it and
writes docs/reliability.md.
"""
