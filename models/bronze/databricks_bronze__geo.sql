{{ config(alias='geo', enabled=databricks_writes_bronze('geo')) }}

{{ databricks_bronze_table('geo') }}
