with source as (
    select * from {{ source('bronze', 'user') }}
),

renamed as (
    select
        cast(ind as bigint) as ind,
        first_name,
        last_name,
        age as age_text,
        date_joined as date_joined_text,
        _stream,
        _offset,
        _ingested_at
    from source
),

typed as (
    select
        *,
        {{ dbt.concat(['first_name', "' '", 'last_name']) }} as user_name,
        try_cast(age_text as integer) as age,
        {{ parse_timestamp('date_joined_text') }} as date_joined
    from renamed
),

flagged as (
    select
        *,
        {{ unparseable_fields({'age': 'age_text', 'date_joined': 'date_joined_text'}) }} as unparseable_fields
    from typed
),

deduplicated as (
    {{ latest_per_key('flagged', 'ind') }}
)

select
    ind,
    user_name,
    age,
    date_joined,
    unparseable_fields,
    _ingested_at
from deduplicated
