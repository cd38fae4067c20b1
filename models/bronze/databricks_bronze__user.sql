{{ config(alias='user', enabled=databricks_writes_bronze('user')) }}

{{ databricks_bronze_table('user') }}
