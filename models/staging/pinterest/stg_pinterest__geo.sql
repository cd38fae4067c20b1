with source as (
    select * from {{ source('bronze', 'geo') }}
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
    _ingested_at
from deduplicated
