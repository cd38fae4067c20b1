-- Incremental: a build joins again only the posts whose pin, geo or user record staging (re)wrote
-- since its last build (`changed_posts_cte`, by the bronze versions it holds), and merges them
-- by `ind`. Staging never loses a key, so a post, once complete, stays complete.

with
{{- changed_posts_cte() }}

pins as (
    select
        ind,
        category,
        poster_name,
        follower_count,
        _ingested_at,
        _bronze_version
    from {{ ref('stg_pinterest__pins') }}
    {{- only_changed_posts() }}
),

geo as (
    select
        ind,
        country,
        timestamp as posted_at,
        _ingested_at,
        _bronze_version
    from {{ ref('stg_pinterest__geo') }}
    {{- only_changed_posts() }}
),

users as (
    select
        ind,
        user_name,
        age,
        date_joined,
        _ingested_at,
        _bronze_version
    from {{ ref('stg_pinterest__users') }}
    {{- only_changed_posts() }}
),

age_groups as (
    -- a group runs up to the next group's youngest age; the last one is open-ended
    select
        age_group,
        min_age,
        lead(min_age) over (order by min_age) as next_min_age
    from {{ ref('age_groups') }}
),

joined as (
    select
        pins.ind,
        pins.category,
        pins.poster_name,
        pins.follower_count,
        geo.country,
        geo.posted_at,
        cast(extract(year from geo.posted_at) as integer) as post_year,
        users.user_name,
        users.age,
        {{ person_id('users.user_name', 'users.age', 'users.date_joined') }} as person_id,
        age_groups.age_group,
        users.date_joined,
        cast(extract(year from users.date_joined) as integer) as join_year,
        greatest(pins._ingested_at, geo._ingested_at, users._ingested_at) as _ingested_at,
        pins._bronze_version as _pin_version,
        geo._bronze_version as _geo_version,
        users._bronze_version as _user_version,
        {{ next_build() }} as _build
    from pins
    inner join geo on pins.ind = geo.ind
    inner join users on pins.ind = users.ind
    left join age_groups
        on
            users.age >= age_groups.min_age
            and (age_groups.next_min_age is null or users.age < age_groups.next_min_age)
)

select * from joined
