{{ databricks_bronze_dependency('quarantine') }}
-- a small table of records no loader could key: rebuilt whole (nothing to merge by)
{{ config(materialized='table') }}

with source as (
    select * from {{ source('bronze', 'quarantine') }}
),

renamed as (
    select
        table_name,
        reason,
        raw_record,
        line_number,
        _stream,
        _offset,
        _source,
        _ingested_at
    from source
)

select * from renamed
