with source as (
    {{ stream_rows(source('bronze', 'user_stream')) }}
),

{{ clean_users('source', extra_columns=stream_metadata_columns()) }}

select * from cleaned
