-- One row per post key any staging table holds: which of its three records arrived, and the dirt
-- each record carries (what data_quality counts), so that data_quality counts over every post
-- without reading staging whole.
-- Incremental, as int_posts_enriched: a build checks again only the posts whose pin, geo or user
-- record staging (re)wrote since its last build (`changed_posts_cte`), and merges them by `ind`.

with
{{- changed_posts_cte() }}

categories as (
    select category from {{ ref('pinterest_categories') }}
),

media_types as (
    select is_image_or_video from {{ ref('pinterest_media_types') }}
),

pins as (
    select
        stg.ind,
        coalesce({{ flags_field('follower_count') }}, false) as follower_count_unparseable,
        coalesce({{ flags_field('downloaded') }}, false) as downloaded_unparseable,
        categories.category is null as unknown_category,
        media_types.is_image_or_video is null as unknown_media_type,
        stg._bronze_version
    from {{ ref('stg_pinterest__pins') }} as stg
    left join categories on stg.category = categories.category
    left join media_types on stg.is_image_or_video = media_types.is_image_or_video
    {{- only_changed_posts('stg.ind') }}
),

geo as (
    select
        ind,
        country is null as country_missing,
        coalesce({{ flags_field('latitude') }}, false) as latitude_unparseable,
        coalesce({{ flags_field('longitude') }}, false) as longitude_unparseable,
        coalesce({{ flags_field('timestamp') }}, false) as timestamp_unparseable,
        _bronze_version
    from {{ ref('stg_pinterest__geo') }}
    {{- only_changed_posts() }}
),

users as (
    select
        ind,
        coalesce({{ flags_field('age') }}, false) as age_unparseable,
        coalesce({{ flags_field('date_joined') }}, false) as date_joined_unparseable,
        user_name is null or age is null or date_joined is null as left_out_of_people,
        _bronze_version
    from {{ ref('stg_pinterest__users') }}
    {{- only_changed_posts() }}
),

checked as (
    select
        coalesce(pins.ind, geo.ind, users.ind) as ind,
        pins.ind is not null as has_pin,
        geo.ind is not null as has_geo,
        users.ind is not null as has_user,
        pins.follower_count_unparseable,
        pins.downloaded_unparseable,
        pins.unknown_category,
        pins.unknown_media_type,
        geo.country_missing,
        geo.latitude_unparseable,
        geo.longitude_unparseable,
        geo.timestamp_unparseable,
        users.age_unparseable,
        users.date_joined_unparseable,
        users.left_out_of_people,
        pins._bronze_version as _pin_version,
        geo._bronze_version as _geo_version,
        users._bronze_version as _user_version,
        {{ next_build() }} as _build
    from pins
    full outer join geo on pins.ind = geo.ind
    full outer join users on coalesce(pins.ind, geo.ind) = users.ind
)

select * from checked
