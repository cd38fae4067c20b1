with poster_followers as (
    select
        country,
        poster_name,
        max(follower_count) as follower_count
    from {{ ref('int_posts_enriched') }}
    where country is not null and poster_name is not null and follower_count is not null
    group by country, poster_name
),

most_followed as (
    {{ top_ranked('poster_followers', 'follower_count', partition_by='country') }}
)

select
    country,
    poster_name,
    follower_count
from most_followed
