{{ config(alias='user_stream', enabled=databricks_writes_bronze('user_stream')) }}

{{ databricks_bronze_table('user_stream') }}
