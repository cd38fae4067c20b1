with source as (
    {{ latest_new_bronze_rows(source('bronze', 'geo'), 'ind') }}
),

{{ clean_geo('source') }}

select
    ind,
    country,
    coordinates,
    timestamp,
    unparseable_fields,
    _stream,
    _offset,
    _ingested_at
from cleaned
