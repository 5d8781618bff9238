"""
The admin listener: the operator's API.
"""
