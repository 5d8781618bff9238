"""
The configuration: frozen values (model), the readers that make them from YAML or JSON
(readers, values, files), the file's schema (schema) and what a reload changes (diff).
"""
