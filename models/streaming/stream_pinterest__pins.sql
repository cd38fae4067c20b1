with source as (
    {{ stream_rows(source('bronze', 'pin_stream')) }}
),

{{ clean_pins('source', extra_columns=stream_metadata_columns()) }}

select * from cleaned
