with pins as (
    select
        ind,
        category,
        poster_name,
        follower_count
    from {{ ref('stg_pinterest__pins') }}
),

geo as (
    select
        ind,
        country,
        timestamp as posted_at
    from {{ ref('stg_pinterest__geo') }}
),

users as (
    select
        ind,
        user_name,
        age,
        date_joined
    from {{ ref('stg_pinterest__users') }}
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
        age_groups.age_group,
        users.date_joined,
        cast(extract(year from users.date_joined) as integer) as join_year
    from pins
    inner join geo on pins.ind = geo.ind
    inner join users on pins.ind = users.ind
    left join age_groups
        on
            users.age >= age_groups.min_age
            and (age_groups.next_min_age is null or users.age < age_groups.next_min_age)
)

select * from joined
