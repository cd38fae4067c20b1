with source as (
    {{ stream_rows(source('bronze', 'geo_stream')) }}
),

{{ clean_geo('source', extra_columns=stream_metadata_columns()) }}

select * from cleaned
