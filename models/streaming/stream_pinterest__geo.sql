{{ databricks_bronze_dependency('geo_stream') }}
with source as (
    {{ stream_rows(source('bronze', 'geo_stream')) }}
),

renamed as (
    select
        {{ post_key('ind') }} as ind,
        country,
        -- raw text still to be typed
        latitude as latitude_text,
        longitude as longitude_text,
        timestamp as timestamp_text,
        -- lineage
        _stream,
        _offset,
        _shard_id,
        _sequence_number,
        _arrival_time,
        _ingested_at
    from source
),

typed as (
    select
        *,
        {{ decimal_from_text('latitude_text') }} as latitude,
        {{ decimal_from_text('longitude_text') }} as longitude,
        {{ timestamp_from_text('timestamp_text') }} as posted_at
    from renamed
),

cleaned as (
    select
        ind,
        country,
        {{ array_of(['latitude', 'longitude']) }} as coordinates,
        -- the raw column's name, kept: a keyword, quoted by no engine here
        posted_at as timestamp,  -- noqa: RF04
        {{ unparseable_fields({'latitude': 'latitude', 'longitude': 'longitude', 'timestamp': 'posted_at'}) }}
            as unparseable_fields,
        _stream,
        _offset,
        _shard_id,
        _sequence_number,
        _arrival_time,
        _ingested_at
    from typed
)

select * from cleaned
