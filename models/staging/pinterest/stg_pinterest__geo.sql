with source as (
    select * from {{ source('bronze', 'geo') }}
),

renamed as (
    select
        cast(ind as bigint) as ind,
        country,
        latitude as latitude_text,
        longitude as longitude_text,
        timestamp as timestamp_text,
        _stream,
        _offset,
        _ingested_at
    from source
),

typed as (
    select
        *,
        try_cast(latitude_text as double) as latitude,
        try_cast(longitude_text as double) as longitude,
        {{ parse_timestamp('timestamp_text') }} as posted_at
    from renamed
),

flagged as (
    select
        *,
        {{ unparseable_fields({
            'latitude': 'latitude_text',
            'longitude': 'longitude_text',
            'posted_at': 'timestamp_text',
        }) }} as unparseable_fields
    from typed
),

deduplicated as (
    {{ latest_per_key('flagged', 'ind') }}
)

select
    ind,
    country,
    {{ array_of(['latitude', 'longitude']) }} as coordinates,
    posted_at as timestamp,
    unparseable_fields,
    _ingested_at
from deduplicated
