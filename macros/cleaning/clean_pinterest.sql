{#- The cleaning of each raw table as CTEs over a CTE of raw rows (`from_cte`), ending in a CTE
    named `cleaned`: typed columns, `unparseable_fields`, and the lineage columns (`_stream`,
    `_offset`, `_ingested_at`, plus `extra_columns`). Staging (batch bronze) and the streaming
    models (bronze streams) share them, so a cleaning rule exists once. The CTEs are flat rather
    than a nested `with`, which every engine reads the same. -#}

{#- A post's key from its raw text: the integer it holds, null if none fits bigint. Cleaning and
    staging's choice of the latest copy (`latest_new_bronze_rows`) key on this same expression. -#}
{% macro post_key(raw_column) -%}
    {{ try_cast_as(raw_column, 'bigint') }}
{%- endmacro %}

{% macro _lineage(extra_columns) -%}
    _stream,
        _offset,
        {%- for column in extra_columns %}
        {{ column }},
        {%- endfor %}
        _ingested_at
{%- endmacro %}

{% macro clean_pins(from_cte, extra_columns=[]) -%}
renamed as (
    select
        -- ids
        {{ post_key('index') }} as ind,
        unique_id,
        -- text with placeholders nulled
        {{ null_if_placeholder('title') }} as title,
        {{ null_if_placeholder('description') }} as description,
        {{ rtrim_spaces(null_if_placeholder('poster_name')) }} as poster_name,
        {{ null_if_placeholder('tag_list') }} as tag_list,
        {{ null_if_placeholder('image_src') }} as image_src,
        is_image_or_video,
        category,
        replace(save_location, 'Local save in ', '') as save_location,
        -- raw text still to be typed
        {{ null_if_placeholder('follower_count') }} as follower_count_text,
        downloaded as downloaded_text,
        {{ _lineage(extra_columns) }}
    from {{ from_cte }}
),

typed as (
    select
        *,
        {{ parse_follower_count('follower_count_text') }} as follower_count,
        {{ parse_flag('downloaded_text') }} as downloaded
    from renamed
),

cleaned as (
    select
        ind,
        unique_id,
        title,
        description,
        follower_count,
        poster_name,
        tag_list,
        is_image_or_video,
        image_src,
        save_location,
        category,
        downloaded,
        {{ unparseable_fields({'follower_count': 'follower_count', 'downloaded': 'downloaded'}) }}
            as unparseable_fields,
        {{ _lineage(extra_columns) }}
    from typed
)
{%- endmacro %}

{% macro clean_geo(from_cte, extra_columns=[]) -%}
renamed as (
    select
        {{ post_key('ind') }} as ind,
        country,
        latitude as latitude_text,
        longitude as longitude_text,
        timestamp as timestamp_text,
        {{ _lineage(extra_columns) }}
    from {{ from_cte }}
),

typed as (
    select
        *,
        {{ parse_decimal('latitude_text') }} as latitude,
        {{ parse_decimal('longitude_text') }} as longitude,
        {{ parse_timestamp('timestamp_text') }} as posted_at
    from renamed
),

cleaned as (
    select
        ind,
        country,
        {{ array_of(['latitude', 'longitude']) }} as coordinates,
        posted_at as timestamp,
        {{ unparseable_fields({'latitude': 'latitude', 'longitude': 'longitude', 'timestamp': 'posted_at'}) }}
            as unparseable_fields,
        {{ _lineage(extra_columns) }}
    from typed
)
{%- endmacro %}

{% macro clean_users(from_cte, extra_columns=[]) -%}
renamed as (
    select
        {{ post_key('ind') }} as ind,
        first_name,
        last_name,
        age as age_text,
        date_joined as date_joined_text,
        {{ _lineage(extra_columns) }}
    from {{ from_cte }}
),

typed as (
    select
        *,
        {{ dbt.concat(['first_name', "' '", 'last_name']) }} as user_name,
        {{ parse_integer('age_text') }} as age,
        {{ parse_timestamp('date_joined_text') }} as date_joined
    from renamed
),

cleaned as (
    select
        ind,
        user_name,
        age,
        date_joined,
        {{ unparseable_fields({'age': 'age', 'date_joined': 'date_joined'}) }} as unparseable_fields,
        {{ _lineage(extra_columns) }}
    from typed
)
{%- endmacro %}
