with source as (
    {{ new_bronze_rows(source('bronze', 'pin')) }}
),

{{ clean_pins('source') }},

deduplicated as (
    {{ latest_per_key('cleaned', 'ind') }}
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
    _stream,
    _offset,
    _ingested_at
from deduplicated
