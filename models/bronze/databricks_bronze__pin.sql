{{ config(alias='pin', enabled=databricks_writes_bronze('pin')) }}

{{ databricks_bronze_table('pin') }}
