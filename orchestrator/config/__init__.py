"""
The configuration: frozen values (model) and their validators (validators); the readers
that make them from YAML or JSON (readers, values, files); the file's text as YAML
(document); the file's schema (schema); and what a reload changes (diff).
"""
