with source as (
    {{ latest_new_bronze_rows(source('bronze', 'pin'), 'index') }}
),

{{ clean_pins('source') }}

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
from cleaned
