{{ config(alias='geo_stream', enabled=databricks_writes_bronze('geo_stream')) }}

{{ databricks_bronze_table('geo_stream') }}
