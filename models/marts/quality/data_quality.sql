-- One row per data-quality check: how many rows the input's dirt touched, out of how many. These
-- checks guard against dirty input, never against the pipeline: their tests warn, and dbt's own
-- test results report these same counts. Only a share beyond `max_affected_rate` (on enough rows)
-- fails the build, since then a rule or a loader is broken, not a record.
-- The per-record flags come from int_post_checks (one row per post key, kept incrementally), so a
-- daily build counts them without reading staging whole.
with posts as (
    select * from {{ ref('int_post_checks') }}
),

pins as (
    select * from posts
    where has_pin
),

geo as (
    select * from posts
    where has_geo
),

users as (
    select * from posts
    where has_user
),

people as (
    select age_group from {{ ref('int_people') }}
),

records_checked as (
    -- every record that reached bronze: loaded (one per key in staging) or quarantined
    select false as quarantined from pins
    union all
    select false as quarantined from geo
    union all
    select false as quarantined from users
    union all
    select true as quarantined from {{ ref('stg_pinterest__quarantine') }}
),

checks as (
    {{ dirty_input_check(
        'pins_follower_count_unparseable', 'stg_pinterest__pins', 'pins', 'follower_count_unparseable', 0.2,
        'follower count neither a placeholder nor 942, 124k or 2M: null and flagged') }}
    union all
    {{ dirty_input_check('pins_downloaded_unparseable', 'stg_pinterest__pins', 'pins', 'downloaded_unparseable', 0.2,
        'downloaded neither 0 nor 1: null and flagged') }}
    union all
    {{ dirty_input_check('pins_unknown_category', 'stg_pinterest__pins', 'pins', 'unknown_category', 0.2,
        'category missing or not among the 13: kept as it is, and the marts show it') }}
    union all
    {{ dirty_input_check('pins_unknown_media_type', 'stg_pinterest__pins', 'pins', 'unknown_media_type', 0.2,
        'is_image_or_video not image, video or a story: kept as it is') }}
    union all
    {{ dirty_input_check('geo_country_missing', 'stg_pinterest__geo', 'geo', 'country_missing', 0.2,
        'geo records without a country: left out of the country marts') }}
    union all
    {{ dirty_input_check('geo_latitude_unparseable', 'stg_pinterest__geo', 'geo', 'latitude_unparseable', 0.2,
        'latitude not a finite decimal number: null and flagged') }}
    union all
    {{ dirty_input_check('geo_longitude_unparseable', 'stg_pinterest__geo', 'geo', 'longitude_unparseable', 0.2,
        'longitude not a finite decimal number: null and flagged') }}
    union all
    {{ dirty_input_check('geo_timestamp_unparseable', 'stg_pinterest__geo', 'geo', 'timestamp_unparseable', 0.2,
        'timestamp not a zero-padded 2020-08-28 03:52:47 or 2020-08-28T03:52:47 of a real date: null and flagged') }}
    union all
    {{ dirty_input_check('users_age_unparseable', 'stg_pinterest__users', 'users', 'age_unparseable', 0.2,
        'age not an integer (24.5 and twenty are not; never rounded): null and flagged') }}
    union all
    {{ dirty_input_check(
        'users_date_joined_unparseable', 'stg_pinterest__users', 'users', 'date_joined_unparseable', 0.2,
        'date_joined not a zero-padded timestamp of a real date: null and flagged') }}
    union all
    {{ dirty_input_check(
        'posts_incomplete', 'int_posts_enriched', 'posts', 'not (has_pin and has_geo and has_user)', 0.5,
        'posts whose pin, geo or user record has not arrived: left out of every mart until it does') }}
    union all
    {{ dirty_input_check('users_left_out_of_people', 'int_people', 'users', 'left_out_of_people', 0.2,
        'user records without a name, an age or a join date: no person, left out of the person marts') }}
    union all
    {{ dirty_input_check('people_without_age_group', 'int_people', 'people', 'age_group is null', 0.5,
        'people under the youngest age group: left out of the age-group marts') }}
    union all
    {{ dirty_input_check('records_quarantined', 'stg_pinterest__quarantine', 'records_checked', 'quarantined', 0.2,
        'records no loader could identify (not JSON, not an object, no integer key): kept with the reason') }}
)

select
    check_name,
    checked_model,
    description,
    affected_rows,
    checked_rows,
    max_affected_rate,
    case when checked_rows > 0 then cast(affected_rows as double) / checked_rows else 0 end as affected_rate
from checks
