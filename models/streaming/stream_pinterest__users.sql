{{ databricks_bronze_dependency('user_stream') }}
with source as (
    {{ stream_rows(source('bronze', 'user_stream')) }}
),

renamed as (
    select
        {{ post_key('ind') }} as ind,
        {{ dbt.concat(['first_name', "' '", 'last_name']) }} as user_name,
        -- raw text still to be typed
        age as age_text,
        date_joined as date_joined_text,
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
        {{ integer_from_text('age_text') }} as age,
        {{ timestamp_from_text('date_joined_text') }} as date_joined
    from renamed
),

cleaned as (
    select
        ind,
        user_name,
        age,
        date_joined,
        {{ unparseable_fields({'age': 'age', 'date_joined': 'date_joined'}) }} as unparseable_fields,
        _stream,
        _offset,
        _shard_id,
        _sequence_number,
        _arrival_time,
        _ingested_at
    from typed
)

select * from cleaned
