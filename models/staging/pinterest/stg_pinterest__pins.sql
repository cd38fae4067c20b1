{{ databricks_bronze_dependency('pin') }}
with source as (
    {{ new_bronze_rows(source('bronze', 'pin')) }}
),

latest_copies as (
    {{ latest_copy_per_post('source', 'index') }}
),

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
        {{ path_without_local_save_prefix('save_location') }} as save_location,
        -- raw text still to be typed
        {{ null_if_placeholder('follower_count') }} as follower_count_text,
        downloaded as downloaded_text,
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
        {{ follower_count_from_text('follower_count_text') }} as follower_count,
        {{ flag_from_text('downloaded_text') }} as downloaded
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
        _stream,
        _offset,
        _ingested_at,
        _bronze_version,
        {{ next_build() }} as _build
    from typed
)

select * from cleaned
