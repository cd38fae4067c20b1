with source as (
    select * from {{ source('bronze', 'pin') }}
),

renamed as (
    select
        -- ids
        cast(index as bigint) as ind,
        unique_id,
        -- text with placeholders nulled
        {{ null_if_placeholder('title') }} as title,
        {{ null_if_placeholder('description') }} as description,
        rtrim({{ null_if_placeholder('poster_name') }}) as poster_name,
        {{ null_if_placeholder('tag_list') }} as tag_list,
        {{ null_if_placeholder('image_src') }} as image_src,
        is_image_or_video,
        category,
        replace(save_location, 'Local save in ', '') as save_location,
        -- raw text still to be typed
        {{ null_if_placeholder('follower_count') }} as follower_count_text,
        downloaded as downloaded_text,
        -- lineage
        _stream,
        _offset,
        _ingested_at
    from source
),

typed as (
    select
        *,
        {{ parse_follower_count('follower_count_text') }} as follower_count,
        case downloaded_text when '1' then true when '0' then false end as downloaded
    from renamed
),

flagged as (
    select
        *,
        {{ unparseable_fields({'follower_count': 'follower_count_text', 'downloaded': 'downloaded_text'}) }}
            as unparseable_fields
    from typed
),

deduplicated as (
    {{ latest_per_key('flagged', 'ind') }}
)

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
    unparseable_fields,
    _ingested_at
from deduplicated
