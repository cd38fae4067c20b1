with source as (
    {{ latest_new_bronze_rows(source('bronze', 'user'), 'ind') }}
),

{{ clean_users('source') }}

select
    ind,
    user_name,
    age,
    date_joined,
    unparseable_fields,
    _stream,
    _offset,
    _ingested_at
from cleaned
