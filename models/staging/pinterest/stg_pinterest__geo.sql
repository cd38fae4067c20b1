with source as (
    {{ new_bronze_rows(source('bronze', 'geo')) }}
),

{{ clean_geo('source') }},

deduplicated as (
    {{ latest_per_key('cleaned', 'ind') }}
)

select
    ind,
    country,
    coordinates,
    timestamp,
    unparseable_fields,
    _stream,
    _offset,
    _ingested_at
from deduplicated
