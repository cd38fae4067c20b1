{{ databricks_bronze_dependency('user') }}
with source as (
    {{ new_bronze_rows(source('bronze', 'user')) }}
),

latest_copies as (
    {{ latest_copy_per_post('source', 'ind') }}
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
        _ingested_at,
        _bronze_version
    from latest_copies
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
        _ingested_at,
        _bronze_version,
        {{ next_build() }} as _build
    from typed
)

select * from cleaned
