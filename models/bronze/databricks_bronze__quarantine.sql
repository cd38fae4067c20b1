{{ config(alias='quarantine', enabled=databricks_writes_bronze('quarantine')) }}

{{ databricks_quarantine() }}
