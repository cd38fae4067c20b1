with source as (
    {{ new_bronze_rows(source('bronze', 'user')) }}
),

{{ clean_users('source') }},

deduplicated as (
    {{ latest_per_key('cleaned', 'ind') }}
)

select
    ind,
    user_name,
    age,
    date_joined,
    unparseable_fields,
    _stream,
    _offset,
    _ingested_at
from deduplicated
