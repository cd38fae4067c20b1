with pins as (
    select ind, category, poster_name, follower_count
    from {{ ref('stg_pinterest__pins') }}
),

geo as (
    select ind, country, timestamp as posted_at
    from {{ ref('stg_pinterest__geo') }}
),

users as (
    select ind, user_name, age, date_joined
    from {{ ref('stg_pinterest__users') }}
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
        {{ age_group('users.age') }} as age_group,
        users.date_joined,
        cast(extract(year from users.date_joined) as integer) as join_year
    from pins
    inner join geo on pins.ind = geo.ind
    inner join users on pins.ind = users.ind
)

select * from joined
