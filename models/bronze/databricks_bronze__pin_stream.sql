{{ config(alias='pin_stream', enabled=databricks_writes_bronze('pin_stream')) }}

{{ databricks_bronze_table('pin_stream') }}
