{{ databricks_bronze_dependency('geo') }}
with source as (
    {{ new_bronze_rows(source('bronze', 'geo')) }}
),

latest_copies as (
    {{ latest_copy_per_post('source', 'ind') }}
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
        _ingested_at,
        _bronze_version
    from latest_copies
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
        _ingested_at,
        _bronze_version,
        {{ next_build() }} as _build
    from typed
)

select * from cleaned
